"""`python -m medledger.node.cli ...`: how node processes are launched (see `node/process.py`)."""

from medledger.node.cli import main

if __name__ == "__main__":
    main()
