"""coldstart: the resolver that scores warm, new and few-shot users and items.

``r(u,i) = a_u · a_i · cos(z_u, z_i) + b_u + b_i`` — see :mod:`coldstart.recommender`.
"""
from .recommender import ColdStartRecommender, Explanation, RecommenderConfig

__all__ = ["ColdStartRecommender", "RecommenderConfig", "Explanation"]
