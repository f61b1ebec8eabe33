"""``lanewatch demo``: the whole site on one machine (runner), real traffic played live, the live view."""
