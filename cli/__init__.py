"""censusdrop.cli"""
