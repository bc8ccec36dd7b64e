"""MR-MKG (Lee et al., ACL 2024, arXiv 2406.02030): multimodal reasoning with a multimodal KG."""
from mmkg.model.mrmkg.alignment import triplet_alignment_loss
from mmkg.model.mrmkg.model import MRMKG

__all__ = ["MRMKG", "triplet_alignment_loss"]
