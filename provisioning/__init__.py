"""Setting a site up from its inventory: the site's private CA, the broker's configuration, device configs."""
