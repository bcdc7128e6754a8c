"""The built-in recipes; importing this package registers them."""

from advtransfer.experiments.recipes import digits_distribution, synthetic  # noqa: F401
