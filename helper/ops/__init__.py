"""At the side: health, metrics, status, sd_notify, expiry warnings, logging."""
