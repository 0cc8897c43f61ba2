"""The application on top of the library: the reproduction, the seed study and their report, and what they fetch
(BEIR folders from MTEB, a GGUF causal LM re-saved for ``convert``). Nothing of the library below imports them;
each module imports its optional extras (mteb, matplotlib, gguf) itself."""
