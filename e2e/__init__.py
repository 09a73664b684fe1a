"""weakalign.e2e"""
