"""``python -m vericar``: the ``vericar`` command (vericar.cli)."""
from vericar.cli import main

if __name__ == "__main__":
    main()
