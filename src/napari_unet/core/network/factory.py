"""Creating new, untrained models with sensible descriptions."""

from __future__ import annotations

from collections.abc import Sequence

from napari_unet.core.network.instances import InstanceRule
from napari_unet.core.network.model_file import ModelDescription, SegmentationModel
from napari_unet.core.network.normalization import Normalization
from napari_unet.core.network.unet import Padding, UNetConfig

#: The three-class scheme used for nuclei and cells: object cores are seeds,
#: boundaries keep touching objects apart.
INTERIOR_BOUNDARY_CLASSES = ("background", "interior", "boundary")


def new_model(
    *,
    in_channels: int = 1,
    class_names: Sequence[str] = INTERIOR_BOUNDARY_CLASSES,
    instance_rule: InstanceRule | None = None,
    depth: int = 4,
    base_features: int = 32,
    padding: Padding = "same",
    norm: str = "none",
    dropout: float = 0.0,
    normalization: Normalization | None = None,
    channel_names: Sequence[str] | None = None,
    name: str = "new U-Net",
    description: str = "",
) -> SegmentationModel:
    """Create an untrained model.

    Parameters
    ----------
    in_channels : int
        Input channels.
    class_names : sequence of str
        Output classes; class 0 is background. The default three-class
        scheme (background, interior, boundary) separates touching objects.
    instance_rule : InstanceRule, optional
        Defaults to a seeded watershed from class 1 over classes 1 and 2 for
        the three-class scheme, and connected components of all non-zero
        classes otherwise.
    depth, base_features, padding, norm, dropout
        See :class:`UNetConfig`.
    normalization : Normalization, optional
        Defaults to percentile normalisation (1 %, 99.8 %).
    channel_names : sequence of str, optional
        Defaults to ``ch0, ch1, ...``.
    name, description : str
        Shown to users.

    Returns
    -------
    SegmentationModel

    Examples
    --------
    >>> new_model(depth=2, base_features=4).description.class_names
    ['background', 'interior', 'boundary']
    """
    class_names = list(class_names)
    if instance_rule is None:
        if tuple(class_names) == INTERIOR_BOUNDARY_CLASSES:
            instance_rule = InstanceRule(method="seeded_watershed", foreground_classes=[1, 2], seed_classes=[1])
        else:
            instance_rule = InstanceRule(method="components", foreground_classes=list(range(1, len(class_names))))
    config = UNetConfig(
        in_channels=in_channels,
        n_classes=len(class_names),
        depth=depth,
        base_features=base_features,
        padding=padding,
        norm=norm,  # type: ignore[arg-type]
        dropout=dropout,
    )
    desc = ModelDescription(
        config=config,
        normalization=normalization or Normalization(),
        channel_names=list(channel_names) if channel_names is not None else [f"ch{i}" for i in range(in_channels)],
        class_names=class_names,
        instance_rule=instance_rule,
        name=name,
        description=description,
    )
    return SegmentationModel(desc)
