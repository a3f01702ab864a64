def handler(event,context):
    return {'status':200,'body':event.get("body","")}
