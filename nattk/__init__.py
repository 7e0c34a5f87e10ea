"""nat-toolkit: NAT, DiNAT and DiNAT_s for MMDetection, MMSegmentation and Detectron2.

The repository's top-level folders install as subpackages of this one:
``backbones`` -> ``nattk.backbones``, ``detection`` -> ``nattk.detection``,
``segmentation`` -> ``nattk.segmentation``, ``mask2former`` -> ``nattk.mask2former``.
"""

__version__ = "0.1.0"
