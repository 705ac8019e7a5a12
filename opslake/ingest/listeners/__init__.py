"""Network listeners that receive pushed data (syslog) and land it in batches."""
