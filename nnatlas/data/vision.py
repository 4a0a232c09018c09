"""Image data sets: MNIST, Fashion-MNIST, KMNIST (IDX), CIFAR-10 (python pickles), ISBI 2012 EM.

Every image comes out float32 ``(C, H, W)`` in [0, 1]; labels are int64. No normalisation
is applied (models or the trainer choose theirs); ``meta["mean"]``/``meta["std"]`` give the
training-set statistics per channel.

Folders (``shared/data`` layout): ``mnist/``, ``fashion-mnist/``, ``kmnist/`` with the four
canonical ``*-idx?-ubyte.gz`` files, each also accepted uncompressed (torchvision's ``raw``
layout); ``cifar-10/`` with ``cifar-10-python.tar.gz`` or its extracted
``cifar-10-batches-py/``; ``isbi2012-em/train/{image,label}/{0..29}.png``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from nnatlas.data.bundle import DataBundle, LoadContext, as_float_images, register_dataset
from nnatlas.data.download import RemoteFile, extract_archive
from nnatlas.data.errors import DataError
from nnatlas.data.formats import CIFAR_GLOBALS, read_idx, restricted_load

__all__ = ["CIFAR10_FILES", "FASHION_MNIST_FILES", "ISBI_FILES", "KMNIST_FILES", "MNIST_FILES", "idx_split_files",
           "read_idx_split"]

logger = logging.getLogger(__name__)

_IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _idx_files(base_url: str, gz: dict[str, str], raw: dict[str, str | None]) -> dict[str, RemoteFile]:
    """The four IDX files: canonical ``.gz`` digests and, where published, the uncompressed ones."""
    return {stem: RemoteFile(f"{stem}.gz", f"{base_url}/{stem}.gz", gz[stem], alternatives=((stem, raw.get(stem)),))
            for stem in _IDX_NAMES}


# torchvision's mirror serves the same bytes as yann.lecun.com (which now often refuses robots).
MNIST_FILES = _idx_files(
    "https://ossci-datasets.s3.amazonaws.com/mnist",
    gz={
        "train-images-idx3-ubyte": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    raw={  # sha256 of the decompressed files
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
)
FASHION_MNIST_FILES = _idx_files(
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com",
    gz={
        "train-images-idx3-ubyte": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
    raw={  # the decompressed labels; the images' are unpublished (an uncompressed copy is checked by format)
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
)
KMNIST_FILES = _idx_files(
    "https://codh.rois.ac.jp/kmnist/dataset/kmnist",
    gz={
        "train-images-idx3-ubyte": "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4",
        "train-labels-idx1-ubyte": "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17",
        "t10k-images-idx3-ubyte": "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5",
        "t10k-labels-idx1-ubyte": "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c",
    },
    raw={},
)

MNIST_CLASSES = [str(d) for d in range(10)]
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot"]
KMNIST_CLASSES = ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"]


def idx_split_files(files: dict[str, RemoteFile], split: str) -> list[RemoteFile]:
    """The images and labels files of one split (``"train"`` or ``"t10k"``)."""
    return [files[f"{split}-images-idx3-ubyte"], files[f"{split}-labels-idx1-ubyte"]]


def read_idx_split(paths: Mapping[str, Path], files: dict[str, RemoteFile], split: str,
                   count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One split of an IDX data set from its local ``paths``: float images (N, 1, 28, 28), int64 labels (N,)."""
    img, lab = (paths[f.name] for f in idx_split_files(files, split))
    images = read_idx(img, expect_ndim=3, expect_count=count)
    labels = read_idx(lab, expect_ndim=1, expect_count=count)
    if images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise DataError(f"{img}: expected uint8 images of 28x28; got {images.dtype} {images.shape[1:]}")
    if labels.min() < 0 or labels.max() > 9:
        raise DataError(f"{lab}: expected labels in 0..9; got {labels.min()}..{labels.max()}")
    return as_float_images(torch.from_numpy(images)), torch.from_numpy(labels.astype(np.int64))


def _channel_stats(x: torch.Tensor) -> tuple[list[float], list[float]]:
    return x.mean(dim=(0, 2, 3)).tolist(), x.std(dim=(0, 2, 3)).tolist()


def _idx_bundle(ctx: LoadContext, name: str, files: dict[str, RemoteFile], classes: list[str], source: str,
                licence: str) -> DataBundle:
    paths = ctx.files(name, name, list(files.values()))  # all four at once: one message lists every missing file
    x_train, y_train = read_idx_split(paths, files, "train", 60_000)
    x_test, y_test = read_idx_split(paths, files, "t10k", 10_000)
    mean, std = _channel_stats(x_train)
    return DataBundle(
        name=name, task="classification",
        train=TensorDataset(x_train, y_train), test=TensorDataset(x_test, y_test),
        num_classes=10, input_shape=(1, 28, 28),
        meta={"classes": classes, "mean": mean, "std": std, "source": source, "licence": licence,
              "split": "the canonical 60,000 train / 10,000 test"},
    )


@register_dataset("mnist", summary="MNIST handwritten digits, 60k/10k, 1x28x28", task="classification")
def _mnist(ctx: LoadContext) -> DataBundle:
    return _idx_bundle(ctx, "mnist", MNIST_FILES, MNIST_CLASSES, "http://yann.lecun.com/exdb/mnist/",
                       "CC BY-SA 3.0 (LeCun & Cortes)")


@register_dataset("fashion-mnist", summary="Fashion-MNIST (Zalando) articles, 60k/10k, 1x28x28", task="classification")
def _fashion_mnist(ctx: LoadContext) -> DataBundle:
    return _idx_bundle(ctx, "fashion-mnist", FASHION_MNIST_FILES, FASHION_MNIST_CLASSES,
                       "https://github.com/zalandoresearch/fashion-mnist", "MIT (Zalando SE)")


@register_dataset("kmnist", summary="Kuzushiji-MNIST cursive Japanese, 60k/10k, 1x28x28", task="classification")
def _kmnist(ctx: LoadContext) -> DataBundle:
    return _idx_bundle(ctx, "kmnist", KMNIST_FILES, KMNIST_CLASSES, "https://github.com/rois-codh/kmnist",
                       "CC BY-SA 4.0 (CODH)")


# ---------------------------------------------------------------------------------------------
# CIFAR-10

CIFAR10_FILES = [RemoteFile("cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                            "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce", size=170_498_071)]
_CIFAR_BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")
_CIFAR_COUNTS = (50_000, 10_000)  # train, test


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    obj = restricted_load(path.read_bytes(), CIFAR_GLOBALS, what=str(path))
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a CIFAR batch dict; got {type(obj).__name__}")
    obj = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    data, labels = obj.get("data"), obj.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: expected 'data' as uint8 (N, 3072); got {getattr(data, 'shape', type(data))}")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (data.shape[0],) or (labels.size and (labels.min() < 0 or labels.max() > 9)):
        raise DataError(f"{path}: expected {data.shape[0]} labels in 0..9; got shape {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels  # rows are R(1024) G(1024) B(1024), row-major 32x32


@register_dataset("cifar10", summary="CIFAR-10 tiny images, 50k/10k, 3x32x32", task="classification")
def _cifar10(ctx: LoadContext) -> DataBundle:
    folder = ctx.folder("cifar-10")
    batches = folder / "cifar-10-batches-py"
    if not all((batches / b).is_file() for b in _CIFAR_BATCHES):
        if batches.exists():
            raise DataError(f"{batches} lacks some of {list(_CIFAR_BATCHES)}; remove the folder and load again "
                            f"to extract it from {CIFAR10_FILES[0].name}")
        # the archive is verified by sha256; the extracted batches are then checked by format
        archive = ctx.files("cifar10", "cifar-10", CIFAR10_FILES)[CIFAR10_FILES[0].name]
        staging = Path(tempfile.mkdtemp(dir=folder, prefix=".cifar-10-extract."))
        try:
            extract_archive(archive, staging / "archive")
            inner = staging / "archive" / "cifar-10-batches-py"
            if not inner.is_dir():
                raise DataError(f"{archive} holds no cifar-10-batches-py/ folder")
            try:
                os.replace(inner, batches)
            except OSError:  # another process (a torchrun rank) put a complete copy there first
                if not all((batches / b).is_file() for b in _CIFAR_BATCHES):
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    parts = [_cifar_batch(batches / b) for b in _CIFAR_BATCHES]
    x_train = np.concatenate([p[0] for p in parts[:5]])
    y_train = np.concatenate([p[1] for p in parts[:5]])
    x_test, y_test = parts[5]
    if (len(x_train), len(x_test)) != _CIFAR_COUNTS:
        raise DataError(f"{batches}: expected {_CIFAR_COUNTS[0]:,} train and {_CIFAR_COUNTS[1]:,} test images; "
                        f"got {len(x_train):,} and {len(x_test):,}")
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    xt = as_float_images(torch.from_numpy(x_train))
    mean, std = _channel_stats(xt)
    return DataBundle(
        name="cifar10", task="classification",
        train=TensorDataset(xt, torch.from_numpy(y_train)),
        test=TensorDataset(as_float_images(torch.from_numpy(x_test)), torch.from_numpy(y_test)),
        num_classes=10, input_shape=(3, 32, 32),
        meta={"classes": classes, "mean": mean, "std": std, "source": "https://www.cs.toronto.edu/~kriz/cifar.html",
              "licence": "no licence stated (Krizhevsky 2009, cite the tech report)",
              "split": "the canonical 50,000 train (data_batch_1..5) / 10,000 test (test_batch)"},
    )


# ---------------------------------------------------------------------------------------------
# ISBI 2012 EM segmentation (PNG slices of the training volume)

_ISBI_URL = "https://raw.githubusercontent.com/zhixuhao/unet/b45af4d458437d8281cc218a07fd4380818ece4a/data/membrane"
_ISBI_SHA = {
    "image": ("12c0ed6f42fc09f512abf6b354f217c950e4c8223b57a0315449b62a14556523",
              "2cfc7ee635a6f85d5faf5c82a71d3a37bf5af4784b554964e3e07193e3ee2166",
              "fe60d8d4f93102666a23a18d718b4b59fab8e616987d11c5072f4a87fac7301f",
              "636d16cbb02f99dda4c9fb6db98dfba066142afa981ffdcfaf54453982e8250c",
              "991fb3a8e4abc73da1d6159ca28fa4397f0a8351f30a8ba3669c86414d2ce239",
              "7e9d9fb787664336d6f2cd68b23986f04527e7f8f494410983b4d70c6de1de3b",
              "7c0a87933ffc72f4ff02f5996d9c3f69fe9a0b5277507415743ad8afb5e5d308",
              "19f2c25716107d41008c83ba8a814ae47a090e00dea766dde38dce1f00899270",
              "a8979e4abd1a10af9ca75e614d97875659adbd8ee3a68eba483bf556cfe3023d",
              "730ebf435ab0f6e625d342552ad03736799fd660d0c6af744674c61a46aa082a",
              "7c3717bcd48c4b7e5c878d7f0b809b8687a4e6fac471f3863de320a82ee72b8a",
              "dd7857b25ca1417f87c282750e22c50947f75e81fa032d4e0c96b902c9dc9757",
              "9f8eff9239bb764d51524a998387a7babcff9f62161804651b030b81aabd5ab8",
              "377e5cdbcd7f0ac7336f482fc7ead7446887863f26769b3841fe98aadca77dad",
              "f50d2d77acd2df564c5f0f40b1b24cd929f5944460aa4cd90c422cb5cef33a59",
              "3e13fdea09accc14f46fb2f3ffa1e882cdd9c53b28a6842c4c10229692c7d1a4",
              "ffc951c12450f94129582c16fd0d4b165c4a31469b0c42d966f07c183d3132e2",
              "0f4f7e8e0619e4c7d517ac68d3789a3b6248253747717eac418bb7d32bef4de3",
              "1bb1edd50595861743d14e1955dfa5d3c9395fb87563eca6dc81433bf9df49de",
              "999b55633f8d7082add72082656e9532c5c3d97203b376eb317f09ba88a5a5b7",
              "9153d14bfd15955fab576ea23281c4f23104b45dceed6e03e0b254607f50a1b2",
              "9ad07cf4f67984f17a08aa63e6d92d395ce55f5132e6ff4fa6d95d6890ea7f97",
              "6278609b4c42a7cb43212de0e2e2ceded758bafe0856fb56214ce658a61668e4",
              "9ef4e9fbc838b9791af83a36918d729a0ea2e90ebc71c4a3c4554059f9379756",
              "f0f917b9c3e9c96d16ea287aff9b05ecf4de88bc61d478e4aefcb64932fba70c",
              "e0154737e76392e8bf94fb2c0dfa5ddad4b53aeec942a0a8cdd8ba63443e6072",
              "d0ff11e09b0ee0c817334946e746a38ab621161d5f9c46af95c68b851f8d9a1a",
              "eed8e8bee1db8fe7af39b5b43ecf14282c5c33eca0959726eea06f662027eacc",
              "974df4b51e8905bdaabe61e80496cbf331f5c9aa9ddc2cb94113f58c2b7d2837",
              "d9ae868509c610a69acbf3d69cde4f36a8e344cbbc444f93c917bf7b9f3e784f"),
    "label": ("13b67edd7607a1f284c09170c96a27d38422b0ffaf88024ea5b689acb5e1b4b0",
              "cff60a00de2901e67165c91d7708d784e4c5bcc9d1c8c677922c905d63bbc3d1",
              "a578af998c017f56763b81941c4dc612dde5731809b2cea0e8ebc37aecb84dbb",
              "c8ae3b843fed02e09411a24c10850160922c331041b17c2674025f05a99b8834",
              "a2f19c01b5d982a97923a0d29e64127a05e3f496731480ac9d9d302b5427f7ff",
              "2dd5779118f6f4d87f88ec112f1cea20663b50acb8c748b0db1f23eda82b5118",
              "2b0984e9f31fb41d4c5f4a754a3e080036b7321a0cbd9591a62010d20a574ce7",
              "2ebc8c835999589bfd7d80d81f83d24e5c41138362b0faafef0f009e1ce82144",
              "db979010ca4fbdb38c8b32d455aed0da90d598153f2a0046b63d02a6efa32b9e",
              "8ee6c79adbb740595c4d61776e065e7164c00d52c7dd7562b5279041e7f3567b",
              "b0156cc8186b0ee521927ac95645b406a42d27564607a6fea3a59c34add78f7c",
              "e47b3aa0cfb3106476af1666e631d45bd16dbf2aff88260ee65d16e4134332db",
              "85a7a899c0b72b81633ad122887ba5161d650385d7775a5b3074eb00131b3620",
              "88549c22fd647312d6b37e17d33e90800d347d60ccb1156a8dde5e67394f9f3d",
              "bcd775017eb4fdbdfe7ad6cc6420b2f16aa9d0576894d08370edcf564b46680a",
              "59a854887b504ff00a5b4b93b2299bbc0bf0cbe54dea58d2b31969229b28b369",
              "b34eb88cdc3313a6f4190f5753465df7f69d8f3c243a5c25427b1b99ecfe2499",
              "4fa076cbeb744803d987dc46cf308dc3026408e7a5188838e30e25fe3ea67dbe",
              "bd009dda57f204804732f592ed1d41ba18961d83c492413fe71548efa4a288d9",
              "bf38407c55b6033c1677230228ecb100a11294aa74a7b92e5edfdc4abadcfef9",
              "7af7296f2e892866669d4e4f9c0d4178987e6ec6e7d0751ec238d1bbe2da9c55",
              "772c722acb2eac01769b53fa5037a3d62745e53102398bf9b2202df605cadda4",
              "b19f5533ec24077a2395a085fe53af75dd350ef03798c4ff40ba9ebecb2ee0ad",
              "2d8f1df5c9ee83e59eb2d709eb153b0570f12e726690f586154b01b0a88bb540",
              "6ab02d922b5c937ecfe2a479be87a5d3e5ef950dc48da09d31f37b47d899ca9c",
              "c5ea59aca7789dd507ac31c4a82bbd4c172f9e3544f8e040442c20d1dfa9e16d",
              "b056fae9f358111b6c9e2494bdba645f206be581959b8d3763e97d62a65dd961",
              "5be3823a57c82b632cead6eb09f438c6010a244dc0975f2a3e466f45d2c06840",
              "c0b0e2a2b7aad46919d1afc980f7d5e39101fb07948ce65d9cac802d8b47682e",
              "1e8839a97178914171defd6a97158f06fcac1fc3f0d45f2acdff9c49ab3fced9"),
}
ISBI_FILES = [RemoteFile(f"train/{kind}/{i}.png", f"{_ISBI_URL}/train/{kind}/{i}.png", sha)
              for kind, shas in _ISBI_SHA.items() for i, sha in enumerate(shas)]


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image  # Pillow comes with matplotlib; imported here so `import nnatlas.data` stays light

    with Image.open(path) as im:
        if im.size != (512, 512):
            raise DataError(f"{path}: expected a 512x512 slice; got {im.size[0]}x{im.size[1]}")
        return np.asarray(im.convert("L"), dtype=np.uint8)


@register_dataset("isbi2012", summary="ISBI 2012 EM membrane segmentation, 30 slices 512x512 (folder isbi2012-em/)", task="segmentation")
def _isbi2012(ctx: LoadContext, *, test_slices: int = 5) -> DataBundle:
    """30 slices; the last ``test_slices`` (default 5: slices 25..29) are held out as the test split."""
    if not 1 <= test_slices <= 29:
        raise DataError(f"isbi2012: test_slices must be in 1..29; got {test_slices}")
    paths = ctx.files("isbi2012", "isbi2012-em", ISBI_FILES)
    images = np.stack([_read_png(paths[f"train/image/{i}.png"]) for i in range(30)])
    labels = np.stack([_read_png(paths[f"train/label/{i}.png"]) for i in range(30)])
    # labels are {0, 255} with interpolation-free exports; threshold at 128 keeps any stray grey honest
    masks = torch.from_numpy((labels >= 128).astype(np.int64))  # 1 = cell interior, 0 = membrane
    x = as_float_images(torch.from_numpy(images))  # (30, 1, 512, 512)
    n = 30 - test_slices
    return DataBundle(
        name="isbi2012", task="segmentation",
        train=TensorDataset(x[:n], masks[:n]), test=TensorDataset(x[n:], masks[n:]),
        num_classes=2, input_shape=(1, 512, 512),
        meta={"classes": ["membrane", "cell"], "foreground": 0, "split": f"slices 0..{n - 1} train, {n}..29 test (the challenge's "
              "test labels are private)", "source": "http://brainiac2.mit.edu/isbi_challenge/ (PNG slices from "
              "github.com/zhixuhao/unet)", "licence": "no formal licence; cite Cardona et al. 2010",
              "membrane_fraction": float(1.0 - masks.float().mean())},
    )

