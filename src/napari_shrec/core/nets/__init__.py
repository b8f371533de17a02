"""Neural networks for particle picking (PyTorch).

Modules: ``unet`` (:class:`~napari_shrec.core.nets.unet.UNet3DConfig`,
:class:`~napari_shrec.core.nets.unet.UNet3D`), ``checkpoint`` (save / load a trained model and
wrap it as a detection ``Predictor``) and ``normalize`` (the input normalisation shared by training
and detection). ``normalize`` needs only numpy; the others import torch. Like
:mod:`napari_shrec.core`, this package re-exports nothing, so importing it costs nothing.
"""
