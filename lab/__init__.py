"""The calibration lab: organisms, their training, erosion and the calibration suite."""
