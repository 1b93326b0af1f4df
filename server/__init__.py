"""censusdrop.server"""
