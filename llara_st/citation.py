"""How to cite LLaRA: model cards, MTEB metadata and losses all point here."""

LLARA_REFERENCE = "https://arxiv.org/abs/2312.15503"
LLARA_CITATION = r"""@misc{li2023makinglargelanguagemodels,
  title = {Making Large Language Models A Better Foundation For Dense Retrieval},
  author = {Chaofan Li and Zheng Liu and Shitao Xiao and Yingxia Shao},
  year = {2023},
  eprint = {2312.15503},
  archivePrefix = {arXiv},
  primaryClass = {cs.CL},
  url = {https://arxiv.org/abs/2312.15503},
}"""
