"""Draw a model's predictions on one image (entry point of :mod:`nattk.demo`)."""

from nattk.demo import main

if __name__ == "__main__":
    main()
