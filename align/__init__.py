"""weakalign.align"""
