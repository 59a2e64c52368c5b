"""ImageJ and Bio-Formats on the Airflow side: the launcher, the smoke run, lab macros, synthetic images."""
