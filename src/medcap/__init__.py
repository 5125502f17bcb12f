"""medcap: medical image concept detection and captioning for ImageCLEFmedical Caption."""
__version__ = "0.1.0"
