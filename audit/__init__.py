"""censusdrop.audit"""
