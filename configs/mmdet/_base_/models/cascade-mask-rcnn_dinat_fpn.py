# Cascade Mask R-CNN with a DiNAT backbone and FPN: the NAT model with DiNAT's COCO dilations.
_base_ = './cascade-mask-rcnn_nat_fpn.py'

model = dict(backbone=dict(type='DiNAT', dilations='coco'))
