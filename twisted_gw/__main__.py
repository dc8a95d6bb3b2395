"""``python -m twisted_gw`` runs the same thing as the ``twisted-gw`` console script."""

from twisted_gw.cli import main

if __name__ == "__main__":
    main()
