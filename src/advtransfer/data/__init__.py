"""Datasets: bundled digits, synthetic data, CIFAR-10, STL-10, CelebA, class subsets, fixtures."""
