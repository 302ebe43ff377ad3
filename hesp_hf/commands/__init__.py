"""The command-line programs (`hesp-train`, `hesp-evaluate`, `hesp-protocol`, `hesp-push`); `scripts/` wraps them."""
