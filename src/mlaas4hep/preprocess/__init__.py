"""mlaas4hep.preprocess"""
