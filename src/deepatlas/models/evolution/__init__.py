"""Evolution: methods that search by selection and variation instead of gradients of a loss."""
