import http.client, time, sys
c=http.client.HTTPConnection("127.0.0.1",19464)
for path in ["/health","/metrics"]:
    t=time.time(); n=2000
    for i in range(n):
        c.request("GET",path); r=c.getresponse(); b=r.read()
    print(path, len(b), (time.time()-t)/n*1e6, "us/req")
