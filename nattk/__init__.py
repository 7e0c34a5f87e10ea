"""nat-toolkit: NAT, DiNAT and DiNAT_s for MMDetection, MMSegmentation and Detectron2.

The repository's top-level folders install as subpackages of this one:
``backbones`` -> ``nattk.backbones`` (the torch-only core), ``detection`` ->
``nattk.detection``, ``segmentation`` -> ``nattk.segmentation``, ``mask2former`` ->
``nattk.mask2former`` (the adapters) and ``openmmlab`` -> ``nattk.openmmlab`` (the glue
the two OpenMMLab adapters share). The modules of this folder are the applications:
the logic behind ``tools/`` (checkpoint converters, FLOPs, ONNX export, training
(``train``) and evaluation (``test``), the demo, environment report) and the pieces
they share (inference, pictures, benchmark timing). The quickstart, with its toy
datasets, console progress bars and output capture, is the subpackage
:mod:`nattk.quickstart`; development tooling (tests, benchmarks, reports) is
:mod:`nattk.dev`.
"""

__version__ = "0.1.0"
