"""mlaas4hep.serve"""
