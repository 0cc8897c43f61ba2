"""The application on top of the library: the reproduction, the seed study, their report and what they fetch (BEIR
folders from MTEB, a GGUF causal LM). Nothing below imports them; each imports its optional extras itself."""
