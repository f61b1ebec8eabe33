"""The top floor: the one ``lanewatch`` command, assembled from each package's commands, and the demo."""
