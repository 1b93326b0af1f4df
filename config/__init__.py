"""censusdrop.config"""
