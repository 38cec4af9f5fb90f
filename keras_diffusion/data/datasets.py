"""Image datasets for training and evaluation, online or from local files.

`load` returns NumPy arrays: images float32 (N, H, W, C) in [0, 1] (the
`DiffusionModel` convention) and labels int32 (N,). It looks, in order, in

1. `data_dir` (argument) or the folder named by `KERAS_DIFFUSION_DATA_DIR`,
   for `<name>.npz` in the layout of `keras.datasets` (`x_train`, `y_train`,
   `x_test`, `y_test`; uint8 images (N, H, W) or (N, H, W, C));
2. tensorflow-datasets (downloads to its usual cache);
3. `keras.datasets` (downloads to ~/.keras/datasets).

Offline with no local file it raises a `FileNotFoundError` naming the file
and the variable.
"""

import os

import numpy as np

DATA_DIR_ENV = "KERAS_DIFFUSION_DATA_DIR"
DATASETS = {
    # name: (image shape, number of classes)
    "mnist": ((28, 28, 1), 10),
    "fashion_mnist": ((28, 28, 1), 10),
    "cifar10": ((32, 32, 3), 10),
}
SPLITS = ("train", "test")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
SOURCES = ("auto", "local", "tfds", "keras")


def load(
    name: str,
    split: str = "train",
    data_dir: str | None = None,
    source: str = "auto",
    limit: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Loads a known dataset as arrays scaled for `DiffusionModel`.

    Args:
        name: `"mnist"`, `"fashion_mnist"` or `"cifar10"`.
        split: `"train"` or `"test"`.
        data_dir: folder holding `<name>.npz`; default `$KERAS_DIFFUSION_DATA_DIR`.
        source: `"auto"` (local file, else tfds, else keras.datasets), or one
            of `"local"`, `"tfds"`, `"keras"` to force it.
        limit: keep only the first `limit` examples.

    Returns:
        `(images, labels)`: float32 (N, H, W, C) in [0, 1] and int32 (N,).

    Example:
    >>> images, labels = load("mnist", split="test")  # doctest: +SKIP
    >>> images.shape, labels[:5]  # doctest: +SKIP
    ((10000, 28, 28, 1), array([7, 2, 1, 0, 4], dtype=int32))
    """
    if name not in DATASETS:
        raise ValueError(
            f"Unknown dataset {name!r}; use one of {sorted(DATASETS)}, or `from_arrays` / "
            "`from_directory` for your own images."
        )
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; use one of {SPLITS}.")
    if source not in SOURCES:
        raise ValueError(f"Unknown source {source!r}; use one of {SOURCES}.")
    if limit is not None and limit < 1:
        raise ValueError(f"`limit` must be a positive integer or None; received {limit}.")
    data_dir = data_dir or os.environ.get(DATA_DIR_ENV)
    local_file = os.path.join(data_dir, f"{name}.npz") if data_dir else None

    if source == "local" or (source == "auto" and local_file and os.path.exists(local_file)):
        images, labels = _load_local(name, split, local_file)
    elif source == "tfds":
        images, labels = _load_tfds(name, split, limit)
    elif source == "keras":
        images, labels = _load_keras(name, split)
    else:
        errors = []
        for loader in (lambda: _load_tfds(name, split, limit), lambda: _load_keras(name, split)):
            try:
                images, labels = loader()
                break
            except Exception as error:  # noqa: BLE001 - any download failure sends us to the next source
                errors.append(f"{type(error).__name__}: {str(error)[:200]}")
        else:
            raise FileNotFoundError(
                f"Could not load {name!r}: no local file and no download worked ({'; '.join(errors)}). "
                f"Offline, put {name}.npz (keys x_train, y_train, x_test, y_test, as keras.datasets "
                f"stores it) in a folder and set {DATA_DIR_ENV} to it or pass data_dir=."
            )
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return from_arrays(images, labels)


def from_arrays(images, labels=None) -> tuple[np.ndarray, np.ndarray | None]:
    """Checks and scales your own arrays to the `DiffusionModel` convention.

    Args:
        images: (N, H, W) or (N, H, W, C) uint8 in [0, 255], or floats in [0, 1].
        labels: optional (N,) integer class labels.

    Returns:
        `(images, labels)`: float32 (N, H, W, C) in [0, 1] and int32 (N,) or None.

    Example:
    >>> x, y = from_arrays(np.zeros((2, 4, 4), "uint8"), [0, 1])
    >>> x.shape, x.dtype, y.dtype
    ((2, 4, 4, 1), dtype('float32'), dtype('int32'))
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(
            f"`images` must be a non-empty array (N, H, W) or (N, H, W, C); received shape {images.shape}."
        )
    if images.dtype == np.uint8:
        images = images.astype("float32") / 255.0
    elif np.issubdtype(images.dtype, np.floating):
        if not np.all(np.isfinite(images)):
            raise ValueError("`images` contain NaN or inf values.")
        low, high = float(images.min()), float(images.max())
        if low < 0.0 or high > 1.0:
            raise ValueError(
                f"Float images must lie in [0, 1]; these span [{low:g}, {high:g}]. Divide uint8-range "
                "data by 255 (or pass it as uint8); map [-1, 1] data with (x + 1) / 2."
            )
        images = images.astype("float32")
    elif np.issubdtype(images.dtype, np.integer) and images.min() >= 0 and images.max() <= 255:
        raise ValueError(
            f"`images` are {images.dtype} with values in [0, 255]: pass them as uint8 "
            "(`images.astype('uint8')`) or as floats in [0, 1] (`images / 255`)."
        )
    else:
        raise ValueError(f"`images` must be uint8 or float; received dtype {images.dtype}.")
    if labels is None:
        return images, None
    labels = np.asarray(labels).reshape(-1)
    if labels.shape[0] != images.shape[0] or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"`labels` must be {images.shape[0]} integers, one per image; received shape {labels.shape} "
            f"and dtype {labels.dtype}."
        )
    return images, labels.astype("int32")


def from_directory(directory: str, image_size: tuple[int, int], grayscale: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Loads an image folder: one sub-folder per class, or images directly inside.

    Args:
        directory: the folder. Sub-folders (sorted by name) become classes 0, 1, ...
        image_size: (height, width) every image is resized to (bilinear).
        grayscale: load one channel instead of RGB.

    Returns:
        `(images, labels)` as `load` returns them (labels all 0 without sub-folders).
    """
    from PIL import Image

    if not os.path.isdir(directory):
        raise FileNotFoundError(f"No such image folder: {directory!r}.")
    extensions = IMAGE_EXTENSIONS
    classes = sorted(d for d in os.listdir(directory) if os.path.isdir(os.path.join(directory, d)))
    folders = [(os.path.join(directory, c), i) for i, c in enumerate(classes)] or [(directory, 0)]
    images, labels = [], []
    for folder, label in folders:
        for file_name in sorted(os.listdir(folder)):
            if file_name.lower().endswith(extensions):
                with Image.open(os.path.join(folder, file_name)) as image:
                    image = image.convert("L" if grayscale else "RGB").resize(image_size[::-1], Image.BILINEAR)
                    images.append(np.asarray(image, dtype=np.uint8))
                labels.append(label)
    if not images:
        raise FileNotFoundError(f"No images ({', '.join(extensions)}) found in {directory!r}.")
    return from_arrays(np.stack(images), np.asarray(labels))


def load_dataset_or_folder(
    source: str,
    split: str = "train",
    data_dir: str | None = None,
    limit: int | None = None,
    image_size: tuple[int, int] | None = None,
    grayscale: bool = False,
) -> tuple[np.ndarray, np.ndarray, str | None]:
    """A known dataset's split (`load`), or an image folder (`from_directory`).

    Args:
        source: a name in `DATASETS` or a folder of images.
        split: the dataset's split; ignored for a folder.
        data_dir: where `load` looks for local files.
        limit: keep only the first `limit` images (None: all).
        image_size: (height, width) of a folder's images; default the first image's size.
        grayscale: load a folder's images with one channel.

    Returns:
        `(images, labels, name)`: arrays as `load` returns them and the dataset's
        name, or None for a folder.

    Example:
    >>> images, labels, name = load_dataset_or_folder("mnist", "test", limit=8)  # doctest: +SKIP
    """
    if source in DATASETS:
        images, labels = load(source, split=split, data_dir=data_dir, limit=limit)
        return images, labels, source
    if not os.path.isdir(source):
        raise ValueError(f"{source!r} is neither a known dataset ({', '.join(DATASETS)}) nor an image folder.")
    images, labels = from_directory(source, image_size or first_image_size(source), grayscale=grayscale)
    if limit:
        images, labels = images[:limit], labels[:limit]
    return images, labels, None


def first_image_size(directory: str) -> tuple[int, int]:
    """(height, width) of the first image in `directory` (walked in sorted order)."""
    from PIL import Image

    for root, folders, files in os.walk(directory):
        folders.sort()
        for name in sorted(files):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                with Image.open(os.path.join(root, name)) as image:
                    return image.height, image.width
    raise FileNotFoundError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) found in {directory!r}.")


def read_images(path: str, image_shape: tuple[int, int, int] | None = None, limit: int | None = None) -> np.ndarray:
    """Images to evaluate: a folder, an `.npz` with an `images` array, or an `.npy`.

    Args:
        path: the folder or file.
        image_shape: (height, width, channels) a folder's images are read at; required for a folder.
        limit: keep only the first `limit` images (None: all).

    Returns:
        The images as stored (a folder's as float32 in [0, 1]); rank, channels and value
        range are checked as FID needs them.

    Example:
    >>> images = read_images("runs/samples.npz", limit=2048)  # doctest: +SKIP
    """
    from keras_diffusion.data.images import as_uint8_images

    if os.path.isdir(path):
        if image_shape is None:
            raise ValueError("Reading a folder of images needs their shape (name the dataset to compare with).")
        images, _ = from_directory(path, image_shape[:2], grayscale=image_shape[2] == 1)
        return images[:limit]
    if not os.path.isfile(path):
        raise ValueError(f"Images {path!r} do not exist (give a folder, an .npz with `images` or an .npy).")
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as data:
            if "images" not in data:
                raise ValueError(f"{path!r} has no `images` array (it has {', '.join(data.files) or 'none'}).")
            images = data["images"][:limit]
    elif path.endswith(".npy"):
        images = np.load(path, allow_pickle=False, mmap_mode="r")[:limit]
    else:
        raise ValueError(f"Images must be a folder, an .npz or an .npy; got {path!r}.")
    as_uint8_images(images)  # checks rank, channels and value range
    return np.asarray(images)


def name_for_shape(image_shape: tuple[int, ...]) -> str:
    """The first known dataset whose images have this shape ("mnist" before "fashion_mnist").

    Example:
    >>> name_for_shape((32, 32, 3))
    'cifar10'
    """
    for name, (shape, _) in DATASETS.items():
        if tuple(shape) == tuple(image_shape):
            return name
    raise ValueError(
        f"No known dataset has images of shape {tuple(image_shape)} "
        f"({', '.join(f'{n}: {s}' for n, (s, _) in DATASETS.items())}); name the real data explicitly."
    )


def _load_local(name, split, path):
    if path is None or not os.path.exists(path):
        raise FileNotFoundError(
            f"Dataset file {path or name + '.npz'} not found. Put {name}.npz (keys x_train, y_train, "
            f"x_test, y_test, as keras.datasets stores it) in a folder and set {DATA_DIR_ENV} to "
            "that folder or pass data_dir=."
        )
    with np.load(path, allow_pickle=False) as data:
        return data[f"x_{split}"], data[f"y_{split}"]


def _load_tfds(name, split, limit):
    import tensorflow_datasets as tfds

    dataset = tfds.load(name, split=split if limit is None else f"{split}[:{limit}]", as_supervised=True)
    images, labels = [], []
    # Batched iteration; tfds' batch_size=-1 would load everything in one tensor.
    for image_batch, label_batch in tfds.as_numpy(dataset.batch(4096)):
        images.append(image_batch)
        labels.append(label_batch)
    return np.concatenate(images), np.concatenate(labels)


def _load_keras(name, split):
    import keras

    module = {"mnist": keras.datasets.mnist, "fashion_mnist": keras.datasets.fashion_mnist, "cifar10": keras.datasets.cifar10}
    train, test = module[name].load_data()
    return train if split == "train" else test
