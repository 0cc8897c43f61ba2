"""The application on top of the library: the end-to-end reproduction (:mod:`~llara_st.pipelines.reproduction`),
the adaptation seed study (:mod:`~llara_st.pipelines.study`), their report (:mod:`~llara_st.pipelines.report`), and
what they fetch: BEIR folders from MTEB (:mod:`~llara_st.pipelines.download`) and a GGUF causal LM re-saved for
``convert`` (:mod:`~llara_st.pipelines.gguf`). ``llara-st reproduce|study`` and the recipes call these; nothing
of the library below imports them. Each module loads its optional extras (mteb, matplotlib, gguf) itself."""
