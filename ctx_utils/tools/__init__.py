"""Running the kit: the notebooks headless (``run_notebooks``), the Colab cells (``colab``), the scoring CLI."""
