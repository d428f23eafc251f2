"""torch.fx passes of fxlazy, one concept per module.

Installed as ``fxlazy.passes``. In pipeline order: ``trace`` (lazy modules as leaves),
``propagate`` (shapes on meta tensors), ``initialize`` (real parameters, in eager order),
``assemble`` (the GraphModule with the model's hierarchy). ``widths``, ``twins``,
``records`` and ``source`` hold what several passes share.
"""
