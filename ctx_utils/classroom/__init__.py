"""The classroom around the paper's steps: exercise checks, exercise notebooks, the explorer, result comparison."""
