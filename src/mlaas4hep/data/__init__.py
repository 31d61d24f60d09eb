"""mlaas4hep.data"""
