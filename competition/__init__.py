"""competition: a Kaggle-style image-classification pipeline."""

__version__ = "0.1.0"
