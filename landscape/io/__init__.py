"""Files in and out: checkpoints (``checkpoint.py``), user factories (``factory.py``), reports."""
