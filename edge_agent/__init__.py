"""The counting device at a lane entrance.

Camera frames become person detections, tracks and line crossings on the device; only counts
(see ``lanewatch.contract``) ever leave it.
"""
