"""hesp-hf's web page as a Hugging Face Space: a Space with `sdk: gradio` runs this file. The model is the one named
by $HESP_CHECKPOINT (a Hub id or a folder of the Space), else outputs/demo. The same page: `hesp-app --help`."""

from hesp_hf.commands.app import cli


if __name__ == "__main__":
    cli()
