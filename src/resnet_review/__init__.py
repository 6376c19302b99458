"""resnet-review: measured ResNet50 optimisation techniques."""
__version__ = "0.1.0"
