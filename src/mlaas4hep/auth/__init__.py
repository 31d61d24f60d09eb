"""mlaas4hep.auth"""
