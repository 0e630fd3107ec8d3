"""Quality and speed measurements on real data; each appends JSON records to results/."""
