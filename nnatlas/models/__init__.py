"""Every model family, one readable file each. Importing this package registers them all.

Families are listed leaf to root in the order the seeds present them.
"""

from nnatlas.models import (  # noqa: F401  (each import registers that family's variants)
    linear,
    lenet,
    alexnet,
    vgg,
    nin,
    googlenet,
    resnet,
    densenet,
    simple_cnn,
    unet,
    autoencoder,
    rnn,
    transformer,
    gpt,
    vit,
    bert,
    diffusion,
    mamba,
    gcn,
    pointer_net,
)
