"""MNIST in its two layouts (the IDX archives and Kaggle's digit-recognizer CSVs): read, convert, report."""
