from llara_st.modules.last_k_pooling import LastKPooling
from llara_st.modules.llara_transformer import LLaRATransformer, check_pooling_width

__all__ = ["LLaRATransformer", "LastKPooling", "check_pooling_width"]
