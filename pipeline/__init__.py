"""weakalign.pipeline"""
