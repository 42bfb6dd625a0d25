"""The network and what travels with it: architecture, model files, shipped models, normalisation, objects.

- :mod:`.unet`: the U-Net of Ronneberger et al. (2015).
- :mod:`.geometry`: its geometry: output sizes, halo, valid sizes, tile context, the pooling grid.
- :mod:`.model_file`: self-describing, safe model files (:class:`~.model_file.SegmentationModel`).
- :mod:`.file_header`: a model file's header, checked before anything is allocated; :mod:`.file_errors`: its error.
- :mod:`.registry`: the models shipped inside the package.
- :mod:`.factory`: new models with a description that fits them.
- :mod:`.normalization`: the intensity normalisation a model was trained with.
- :mod:`.instances`: from class probabilities to objects, by the rule the model carries.
"""
