"""Data in and out: datasets as arrays, files written atomically, and image conversions.

- `datasets`: MNIST, CIFAR-10 and folders of images as arrays in the model's convention, online or offline.
- `files`: atomic writes (readers see the old file or the new one), PNG images, `.safetensors`.
- `images`: images of any accepted form turned into uint8 batches.
- `torch_archive`: the tensors of a PyTorch or TorchScript file, read without PyTorch and without running its pickle.
"""

from keras_diffusion.data import datasets, files, images, torch_archive
from keras_diffusion.data.files import (
    read_safetensors,
    replaced_atomically,
    save_image_atomically,
    save_model_atomically,
    save_npz_atomically,
    write_bytes_atomically,
    write_safetensors,
)
from keras_diffusion.data.images import as_uint8_images, iterate_image_batches
