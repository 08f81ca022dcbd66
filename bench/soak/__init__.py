"""On-demand rows of the fault and abuse battery (long or heavy on 2 cores)."""
